"""Who is calling, and what they may do: tokens, API keys and roles.

The transport layer reads the credentials of each call, and asks
:class:`~osd.engine.access.authenticator.Authenticator` for the caller
(a :class:`~osd.engine.access.principal.Principal`) and whether the caller's
roles allow the method.
"""
