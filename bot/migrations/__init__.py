"""The edge's tables (bot_*): one SQL file per dialect and version."""
