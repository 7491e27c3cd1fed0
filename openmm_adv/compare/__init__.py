"""Sampler comparison studies: protocols, their runners and their reports."""

from .protocol import CompareProtocol, load_protocol, run_protocol

__all__ = ["CompareProtocol", "load_protocol", "run_protocol"]
