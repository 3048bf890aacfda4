"""Streamlit Community Cloud's entrypoint: the same app as `app.py`, serving a published bundle.

Community Cloud runs `streamlit run deploy/streamlit_app.py` from the repository root and installs
`deploy/requirements.txt` (the file beside the entrypoint wins over the root's): the app's serving
dependencies, without torch. Set `EMBEDDINGS_BUNDLE` (a URL of an archive made by
`python -m embeddings publish --archive`) in the app's secrets; see the README's "Share on
Streamlit Community Cloud".
"""

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the `embeddings` and `app_support` packages

runpy.run_path(str(ROOT / "app.py"), run_name="__main__")
