"""Mirrors of our credentials on Credly and Accredible: ours stays the source of truth, the mirror follows it.

`enqueue` is called inside the transactions that issue, re-issue and revoke a credential; `views` shows a
credential's mirrors in the API. The job, the clients and the admin routes live in this package's modules.
"""

from .service import enqueue, views

__all__ = ["enqueue", "views"]
