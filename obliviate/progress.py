"""Progress on the terminal (rich): what a long run shows while it trains and unlearns. The library reports
progress through any object with note/start/advance/stop; this is the one the CLI and `obliviate.run(quiet=False)`
pass. It lives apart from the CLI so the library never imports its command-line front end."""
from __future__ import annotations

import sys

from rich.console import Console

# markup off: everything printed quotes user input, method names and commands verbatim (with markup on, rich
# swallowed "[over budget]" from the piped table and "[tune]" from pip install 'obliviate[tune]'); style= colours
console = Console(width=None if sys.stdout.isatty() else 140, markup=False)   # pipes and CI get full columns


class RichProgress:
    def __init__(self):
        self.p = None

    def note(self, text):
        console.print(text, style="dim")

    def start(self, total, what):
        if total == 0:
            console.print("everything is cached: nothing to compute", style="dim")
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)    # lazy, as Table: a cached rerun shows no bar
        self.p = Progress(TextColumn("{task.description:<22}", markup=False), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self.p.start()
        self.task = self.p.add_task(f"models ({what})", total=total)

    def advance(self, k, name):
        if self.p:
            self.p.update(self.task, advance=k, description=name[:22])

    def stop(self):
        if self.p:
            self.p.stop()
