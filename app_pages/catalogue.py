"""Catalogue: what is built, building missing models, and adding catalogues (first run too)."""

from app_support.catalogue_ui import catalogue_page
from app_support.sidebar import selection

catalogue_page(selection())
