"""Trainer worker: trains a run and streams a snapshot after every batch to the tape."""
