"""Fake third-party services over real HTTP on loopback (Credly, Accredible), with fault injection."""
