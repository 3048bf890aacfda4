"""Duplicates: groups of near-duplicate products per model, at a threshold per model."""

from app_support.duplicates_ui import duplicates_page
from app_support.sidebar import selection

duplicates_page(selection())
