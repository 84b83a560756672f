"""Delivery: what a credential is handed out as besides its JSON-LD and JWT (QR codes, LinkedIn links, ...)."""
