"""Bundles: publishing a catalogue read-only (`publish`) and opening one to serve (`open`)."""
