"""Building: one model's index over a catalogue (`model`), and a whole catalogue build, the one
path both front doors take (`catalogue`)."""
