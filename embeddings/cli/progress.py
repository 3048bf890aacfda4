"""The CLI's one progress adapter: `Progress` events as tqdm bars on stderr."""

from __future__ import annotations

from embeddings.progress import Progress


class ProgressBars:
    """A tqdm bar per (model, stage) while the work counts (`total` > 0), closed when the next
    one starts or the work ends; a step with only a message is one line above the bars."""

    def __init__(self, unit: str = "it"):
        self.unit = unit
        self.bars: dict[tuple[str | None, str], object] = {}

    def __call__(self, event: Progress) -> None:
        from tqdm import tqdm

        if not event.total:
            if event.message:
                prefix = f"[{event.model_id}] " if event.model_id else ""
                tqdm.write(prefix + event.message)
            return
        key = (event.model_id, event.stage)
        bar = self.bars.get(key)
        if bar is None:
            self.close()
            name = " ".join(part for part in (event.model_id, event.stage) if part)
            in_bytes = event.unit == "bytes"
            bar = self.bars[key] = tqdm(
                total=event.total,
                desc=name,
                unit="B" if in_bytes else self.unit,
                unit_scale=in_bytes,
                dynamic_ncols=True,
            )
        bar.total = event.total
        if event.message:
            bar.set_postfix_str(event.message, refresh=False)
        bar.update(event.done - bar.n)

    def close(self) -> None:
        for key in list(self.bars):
            self.bars.pop(key).close()
