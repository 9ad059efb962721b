"""QEMU: the command line (pure), the accelerator, the machine's lifecycle."""
