"""What the demo, benchmark and self-check tools drive; each builds on the engine."""
