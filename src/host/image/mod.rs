//! Building image files from packages: kernel, initramfs, rootfs, work seed.
