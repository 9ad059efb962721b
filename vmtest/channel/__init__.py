"""Ways to talk to a guest: SSH (paramiko) and the serial console (pexpect)."""
