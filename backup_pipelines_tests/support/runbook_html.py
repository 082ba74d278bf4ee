"""Reading the recovery runbook's HTML as a person (or a script) would."""

from html.parser import HTMLParser


class RunbookParser(HTMLParser):
    """Collects the <pre> blocks by class and database (`<database>:replica` for the copy in the
    replica store), and every external reference (an inline script or style is the page's
    own)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: dict[tuple[str, str], str] = {}
        self.external: list[str] = []
        self._open: tuple[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in {"link", "img", "iframe"} or "src" in attributes:
            self.external.append(tag)
        if tag == "pre":
            subject = attributes.get("data-database") or attributes.get("data-server") or ""
            if attributes.get("data-store") == "replica":
                subject += ":replica"
            self._open = (attributes.get("class") or "", subject)
            self.blocks[self._open] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open:
            self.blocks[self._open] += data
