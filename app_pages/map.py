"""Map: each selected model's 2-D map of the catalogue, side by side."""

from app_support.map_ui import map_page
from app_support.sidebar import selection

map_page(selection())
