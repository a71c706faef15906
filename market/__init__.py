"""PeerGrid's market kernel: types, integer units, order validation, clearing and settlement.

Pure: no I/O, and no imports of other PeerGrid packages.
"""
