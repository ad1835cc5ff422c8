"""Live open-banking consent: the PSD2 redirect flow, synced snapshots, minimisation."""
