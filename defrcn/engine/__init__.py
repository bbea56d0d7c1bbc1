"""Recipe loading, device setup and the train/eval drivers shared by tools/."""
