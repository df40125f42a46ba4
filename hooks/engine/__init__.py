"""The clinical engine: knowledge files, pure assessment and card rendering (brief §5-§6)."""
