"""MkDocs hook: serve the README, reports/ and figures/ in the site, and keep every link as
written for GitHub.

Pages in this repository link each other relative to their place in the repository
(``docs/training.md`` links ``../reports/training.md``), which is what GitHub renders. The site's
root is ``docs/``, so this hook adds the files outside it that the site shows (README.md as the
home page, reports/*.md, figures/*.png) and rewrites each relative link to the target's place in
the site. A link to any other repository file (a script, a results file) becomes a link to it on
the repository host. A link to nothing is left alone, so ``mkdocs build --strict`` fails on it.
"""

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def _extra() -> dict[str, str]:
    """Repository path -> site path of each file outside docs/ that the site serves."""
    paths = {"README.md": "index.md"}
    for pattern in ("reports/*.md", "figures/*.png"):
        for path in sorted(ROOT.glob(pattern)):
            rel = path.relative_to(ROOT).as_posix()
            paths[rel] = rel
    return paths


def on_files(files, config):
    for repo_path, site_path in _extra().items():
        files.append(File.generated(config, site_path, abs_src_path=str(ROOT / repo_path)))
    return files


def _site_map(files) -> dict[str, str]:
    extra = _extra()
    generated = set(extra.values())
    site = {
        f"docs/{f.src_uri}": f.src_uri
        for f in files
        if f.src_uri not in generated and not f.inclusion.is_excluded()
    }
    site.update(extra)
    return site


def on_page_markdown(markdown, page, config, files):
    site = _site_map(files)
    repo_of = {v: k for k, v in site.items()}
    page_repo = repo_of[page.file.src_uri]
    base = config.repo_url.rstrip("/")

    def rewrite(match: re.Match) -> str:
        target = match.group(2)
        if "://" in target or target.startswith(("#", "mailto:")):
            return match.group(0)
        path, _, fragment = target.partition("#")
        repo_target = posixpath.normpath(posixpath.join(posixpath.dirname(page_repo), path))
        if repo_target in site:
            new = posixpath.relpath(site[repo_target], posixpath.dirname(page.file.src_uri) or ".")
        elif (ROOT / repo_target).exists() and not repo_target.startswith(".."):
            kind = "tree" if (ROOT / repo_target).is_dir() else "blob"
            new = f"{base}/{kind}/main/{repo_target}"
        else:
            return match.group(0)
        return f"{match.group(1)}{new}{'#' + fragment if fragment else ''}{match.group(3)}"

    return _LINK.sub(rewrite, markdown)
