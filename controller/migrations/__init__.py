"""The store's schema history, managed by Alembic (a script directory, loaded by path).

``env.py`` runs the migrations on the connection :class:`controller.store.Store` hands it (or,
for developers' ``alembic`` command line, on the URL of ``alembic.ini`` or ``-x db=URL``);
``versions/`` holds one module per schema change, oldest first: ``0001_initial`` is the schema
of PeerGrid 0.1.0, the last release before migrations; ``0002_site_identity`` adds the table of
the site a database belongs to. ``script.py.mako`` is the template of
``alembic revision``.
"""
