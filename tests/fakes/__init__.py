"""Test doubles that present the same API as the real libraries (NVML)."""
