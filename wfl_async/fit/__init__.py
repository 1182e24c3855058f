"""Fits as queued jobs, with wfl's module paths: ``gap.simple``, ``gap.multistage``, ``ace``, ``committee``."""
