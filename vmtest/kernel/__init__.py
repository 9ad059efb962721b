"""Kernel sources, configuration and builds."""
