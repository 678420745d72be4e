"""Composing and delivering email: transport, (later) rendering and the sending pipeline."""
