"""Vendored browser assets are the files their recorded checksums name (no CDN, no drift)."""

from __future__ import annotations

from admin import vendor


def test_vendored_assets_match_their_recorded_sha256() -> None:
    manifest = vendor.load_manifest()
    assert "htmx" in manifest and manifest["htmx"]["version"].startswith("2.")
    assert vendor.check() == []
