//! Turning a bzImage `vmlinuz` into the ELF `vmlinux` Firecracker loads, and checking it.

use super::ImageError;

/// Magic number opening a legacy LZ4 stream (`lz4 -l`), as the kernel build writes it.
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Each legacy LZ4 block decompresses to at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
/// `PT_NOTE` program header type.
const PT_NOTE: u32 = 4;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH entry point Firecracker boots through.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn le32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn le16(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn le64(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    let mut buf = [0u8; 8];
    buf.copy_from_slice(bytes);
    Some(u64::from_le_bytes(buf))
}

/// Extracts the ELF kernel from an x86 bzImage whose payload is legacy-LZ4
/// compressed (Debian's kernels), and checks it carries the PVH entry note.
pub fn unpack_vmlinuz(bzimage: &[u8]) -> Result<Vec<u8>, ImageError> {
    let bad = |why: &str| ImageError::BadBzImage(why.to_string());
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        return Err(bad("no \"HdrS\" boot header at 0x202"));
    }
    let setup_sects = match bzimage.get(0x1f1).copied() {
        Some(0) => 4,
        Some(n) => usize::from(n),
        None => return Err(bad("file too short")),
    };
    let payload_offset = le32(bzimage, 0x248).ok_or_else(|| bad("file too short"))? as usize;
    let payload_length = le32(bzimage, 0x24c).ok_or_else(|| bad("file too short"))? as usize;
    let start = (setup_sects + 1) * 512 + payload_offset;
    let payload = start
        .checked_add(payload_length)
        .and_then(|end| bzimage.get(start..end))
        .ok_or_else(|| bad("payload offset/length point past the end of the file"))?;
    let vmlinux = decompress_lz4_legacy(payload)?;
    check_elf(&vmlinux, "the unpacked vmlinuz")?;
    check_pvh_note(&vmlinux, "the unpacked vmlinuz")?;
    Ok(vmlinux)
}

/// Decodes a legacy LZ4 stream: the magic, then blocks of a 4-byte LE
/// compressed size and the block; the kernel appends the 4-byte total size.
fn decompress_lz4_legacy(payload: &[u8]) -> Result<Vec<u8>, ImageError> {
    if le32(payload, 0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(ImageError::BadBzImage(
            "payload is not legacy LZ4 (magic 0x184C2102); only LZ4-compressed kernels are supported"
                .to_string(),
        ));
    }
    let mut out = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    let mut pos = 4;
    loop {
        let remaining = payload.len() - pos;
        if remaining == 0 {
            break;
        }
        let Some(size) = le32(payload, pos) else {
            return Err(ImageError::Lz4 {
                offset: pos,
                reason: "truncated block header".to_string(),
            });
        };
        if remaining == 4 {
            // The total uncompressed size the kernel build appends.
            if size as usize != out.len() {
                return Err(ImageError::Lz4 {
                    offset: pos,
                    reason: format!("trailer says {size} bytes, decoded {}", out.len()),
                });
            }
            break;
        }
        pos += 4;
        if size == LZ4_LEGACY_MAGIC {
            continue;
        }
        let data = pos
            .checked_add(size as usize)
            .and_then(|end| payload.get(pos..end))
            .ok_or_else(|| ImageError::Lz4 {
                offset: pos,
                reason: format!("block of {size} bytes runs past the end"),
            })?;
        let n =
            lz4_flex::block::decompress_into(data, &mut block).map_err(|e| ImageError::Lz4 {
                offset: pos,
                reason: e.to_string(),
            })?;
        out.extend_from_slice(&block[..n]);
        pos += size as usize;
    }
    Ok(out)
}

/// Checks `image` is a 64-bit little-endian ELF file; `what` names it in the error.
pub fn check_elf(image: &[u8], what: &str) -> Result<(), ImageError> {
    // EI_CLASS 2 = 64-bit, EI_DATA 1 = little-endian.
    if image.get(..4) == Some(b"\x7fELF") && image.get(4) == Some(&2) && image.get(5) == Some(&1) {
        Ok(())
    } else {
        Err(ImageError::NotElf {
            what: what.to_string(),
        })
    }
}

/// Checks the ELF `image` has a Xen PVH entry note (`PT_NOTE`, name "Xen", type 18).
pub fn check_pvh_note(image: &[u8], what: &str) -> Result<(), ImageError> {
    check_elf(image, what)?;
    if pvh_note_present(image) {
        Ok(())
    } else {
        Err(ImageError::NoPvhNote {
            what: what.to_string(),
        })
    }
}

fn pvh_note_present(image: &[u8]) -> bool {
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (le64(image, 0x20), le16(image, 0x36), le16(image, 0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let Some(ph) = usize::try_from(phoff)
            .ok()
            .and_then(|off| off.checked_add(i * usize::from(phentsize)))
        else {
            return false;
        };
        if le32(image, ph) != Some(PT_NOTE) {
            return false;
        }
        let (Some(offset), Some(size)) = (le64(image, ph + 8), le64(image, ph + 0x20)) else {
            return false;
        };
        let notes = usize::try_from(offset).ok().and_then(|start| {
            let end = start.checked_add(usize::try_from(size).ok()?)?;
            image.get(start..end)
        });
        notes.is_some_and(notes_have_pvh)
    })
}

fn notes_have_pvh(notes: &[u8]) -> bool {
    let align4 = |n: usize| n.div_ceil(4) * 4;
    let mut pos = 0;
    while let (Some(namesz), Some(descsz), Some(kind)) =
        (le32(notes, pos), le32(notes, pos + 4), le32(notes, pos + 8))
    {
        let name_start = pos + 12;
        let name = notes.get(name_start..name_start + namesz as usize);
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && name == Some(b"Xen\0") {
            return true;
        }
        pos = name_start + align4(namesz as usize) + align4(descsz as usize);
    }
    false
}

/// The release from the kernel's `Linux version <release> ...` banner, if present.
pub fn kernel_release(vmlinux: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let at = vmlinux.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
    let rest = vmlinux.get(at..)?;
    let end = rest.iter().position(|&b| b == b' ' || b == 0)?;
    let release = std::str::from_utf8(&rest[..end]).ok()?;
    (!release.is_empty()).then(|| release.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A minimal ELF64 image: header, one PT_NOTE program header, one note.
    pub(crate) fn tiny_elf(note_name: &[u8], note_type: u32) -> Vec<u8> {
        let mut elf = vec![0u8; 0x40];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let mut note = Vec::new();
        note.extend_from_slice(&(note_name.len() as u32).to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&note_type.to_le_bytes());
        note.extend_from_slice(note_name);
        note.resize(note.len().div_ceil(4) * 4, 0);
        note.extend_from_slice(&0x0100_0000u32.to_le_bytes());
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&PT_NOTE.to_le_bytes());
        ph[8..16].copy_from_slice(&(0x40u64 + 56).to_le_bytes()); // p_offset
        ph[0x20..0x28].copy_from_slice(&(note.len() as u64).to_le_bytes()); // p_filesz
        elf.extend_from_slice(&ph);
        elf.extend_from_slice(&note);
        elf.extend_from_slice(b"\0Linux version 6.1.0-test (builder) #1 SMP\0");
        elf
    }

    /// Wraps `payload` in a bzImage: setup sectors, header fields, legacy LZ4 blocks.
    fn bzimage(vmlinux: &[u8], block_size: usize, setup_sects: u8) -> Vec<u8> {
        let mut lz4 = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in vmlinux.chunks(block_size) {
            let block = lz4_flex::block::compress(chunk);
            lz4.extend_from_slice(&(block.len() as u32).to_le_bytes());
            lz4.extend_from_slice(&block);
        }
        lz4.extend_from_slice(&(vmlinux.len() as u32).to_le_bytes());
        let sects = if setup_sects == 0 {
            4
        } else {
            usize::from(setup_sects)
        };
        let payload_offset = 0x80usize;
        let mut image = vec![0u8; (sects + 1) * 512 + payload_offset];
        image[0x1f1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x248..0x24c].copy_from_slice(&(payload_offset as u32).to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(lz4.len() as u32).to_le_bytes());
        image.extend_from_slice(&lz4);
        image.extend_from_slice(&[0xAA; 16]); // trailing bytes after the payload
        image
    }

    #[test]
    fn unpacks_a_multi_block_payload() {
        let mut vmlinux = tiny_elf(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY);
        vmlinux.extend((0..200_000u32).map(|i| (i % 251) as u8));
        let out = unpack_vmlinuz(&bzimage(&vmlinux, 64 * 1024, 7)).unwrap();
        assert_eq!(out, vmlinux);
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let vmlinux = tiny_elf(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY);
        assert_eq!(
            unpack_vmlinuz(&bzimage(&vmlinux, 4096, 0)).unwrap(),
            vmlinux
        );
    }

    #[test]
    fn rejects_a_kernel_without_the_pvh_note() {
        let vmlinux = tiny_elf(b"GNU\0", 3);
        let err = unpack_vmlinuz(&bzimage(&vmlinux, 4096, 4)).unwrap_err();
        assert!(matches!(err, ImageError::NoPvhNote { .. }), "{err}");
        assert!(err.to_string().contains("CONFIG_PVH"), "{err}");
    }

    #[test]
    fn rejects_a_payload_that_is_not_elf() {
        let err = unpack_vmlinuz(&bzimage(b"just some bytes, not a kernel", 4096, 4)).unwrap_err();
        assert!(matches!(err, ImageError::NotElf { .. }), "{err}");
    }

    #[test]
    fn rejects_files_that_are_not_bzimages() {
        let err = unpack_vmlinuz(b"\x7fELF not a bzImage").unwrap_err();
        assert!(matches!(err, ImageError::BadBzImage(_)), "{err}");
    }

    #[test]
    fn rejects_other_compressions() {
        let mut image = bzimage(&tiny_elf(b"Xen\0", 18), 4096, 4);
        let start = 5 * 512 + 0x80;
        image[start..start + 4].copy_from_slice(&[0x1f, 0x8b, 0x08, 0x00]); // gzip
        let err = unpack_vmlinuz(&image).unwrap_err();
        assert!(err.to_string().contains("legacy LZ4"), "{err}");
    }

    #[test]
    fn rejects_a_truncated_block() {
        let mut image = bzimage(&tiny_elf(b"Xen\0", 18), 4096, 4);
        // Claim a payload length that cuts the first block short.
        image[0x24c..0x250].copy_from_slice(&12u32.to_le_bytes());
        let err = unpack_vmlinuz(&image).unwrap_err();
        assert!(matches!(err, ImageError::Lz4 { .. }), "{err}");
    }

    #[test]
    fn reads_the_release_from_the_banner() {
        let elf = tiny_elf(b"Xen\0", 18);
        assert_eq!(kernel_release(&elf).as_deref(), Some("6.1.0-test"));
        assert_eq!(kernel_release(b"no banner here"), None);
    }
}
