"""The domain: one package per bounded context.

- ``shared``: validation, sizes, paging, the small value types every context
  returns, and the row helpers (get-or-NotFound, generation checks);
- ``topology``: clusters, nodes, drives, pools, maintenance, availability;
- ``placement``: the pure placement function and the rules and cluster view it
  reads;
- ``volumes``: volumes, snapshots, attachments, templates, their phased
  changes and crash recovery;
- ``jobs``: the persistent job engine, its runner and the job kinds, and the
  Service API's long operations started as jobs;
- ``datastores``: the datastore version registry;
- ``drivers``: the storage drivers, the engine's only way to touch storage.

:class:`osd.engine.engine.Engine` composes them; servicers call only it.
Contexts import ``shared`` and each other's public modules, never the server.
"""
