"""Golden references the native core is checked against (pure numpy, no peer engine)."""
