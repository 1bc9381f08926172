"""Inference engines behind one interface (see `linewatch.engines.base.Engine`)."""
