"""Who may do what: API keys, authentication, roles, scopes and the write throttle.

* ``keys``: creating, revoking and listing API keys (services and selectors).
* ``authentication``: ``Authorization: Api-Key <key>`` (or ``Bearer <key>``).
* ``permissions``: roles — admin, scheduler, viewer.
* ``scoping``: a key confined to one organization's or team's subtree (DESIGN §6).
* ``throttling``: the per-key limit on writes, counted in PostgreSQL.

The ``ApiKey`` model itself lives in ``quotas.models`` with the other tables of the
app.
"""
