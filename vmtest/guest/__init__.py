"""What runs inside the guest: the initramfs and its init."""
