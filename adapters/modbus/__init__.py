"""PeerGrid package."""
