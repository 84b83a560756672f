"""The Open Badges 3.0 issuer service: keys, issuers, achievements, issuing, public documents, storage."""
