"""The web console (issue 15): server-rendered pages and a JSON API over the audit DB.

``meddet serve`` runs it on a thread beside the node, ``meddet console`` on its own (e.g. beside
a distributed deployment). Modules: ``users`` (accounts, passwords, tokens, sessions, lock-out),
``data`` (what the pages read), ``actions`` (what admins may do), ``preview`` (key-slice PNGs),
``web`` (authentication, CSRF, templates), ``app`` (pages), ``api`` (JSON) and ``server``
(uvicorn). Nothing here imports torch.
"""
