"""Root filesystems: safe layer unpacking, disk images, the initramfs."""
