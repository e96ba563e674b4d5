"""Shared pytest setup for kubelab's tests."""

from __future__ import annotations
