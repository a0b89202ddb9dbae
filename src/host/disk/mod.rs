//! Loop devices, device-mapper snapshots, copy-on-write clones and ext4 images.
