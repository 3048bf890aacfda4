"""Ray is a building dependency of the Ray engine only: a local build, searches and the bundle
code never import it (the torch-free serving environment does not have it)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.harness.paths import REPO


def test_a_local_build_and_every_query_leave_ray_unimported(product_folder, tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        from PIL import Image
        from embeddings.building.catalogue import BuildRequest, build_catalogue
        from embeddings.catalogue import Catalogue, create_catalogue
        from embeddings.search.searcher import make_searcher
        import embeddings.bundle.open, embeddings.bundle.publish, app_support.sidebar
        catalogue = create_catalogue({str(product_folder)!r}, {str(tmp_path / "shop")!r})
        request = BuildRequest(out=catalogue.directory, models=["pixels"], bridges=False)
        built = build_catalogue(request)
        catalogue = Catalogue.open(catalogue.directory)
        searcher = make_searcher(catalogue)
        item = searcher.search_item(catalogue.ids[3], ["pixels"], 5)["pixels"]
        photo = Image.open(catalogue.image_path(catalogue.ids[7])).convert("RGB")
        upload = searcher.search_image(photo, ["pixels"], 5)["pixels"]
        print(json.dumps({{"built": [o.status for o in built.outcomes], "item": len(item),
                           "upload": upload[0].id == catalogue.ids[7],
                           "ray": sorted(m for m in sys.modules if m.split(".")[0] == "ray")}}))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["built"] == ["built"] and report["item"] == 5 and report["upload"] is True
    assert report["ray"] == []
