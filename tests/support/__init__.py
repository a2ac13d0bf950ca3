"""Helpers that tests of both tiers share: each module serves the unit and end-to-end halves of one
topic."""
