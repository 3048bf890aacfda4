"""Search: a product, a text or an image in; every selected model's top-k side by side."""

from app_support.search_ui import search_page
from app_support.sidebar import selection

search_page(selection())
