"""A fake installed package (a pgdbm library) with migrations, found by importlib like a real one."""


def make_package(site, name="fakelib", version="1.2.3", files=None, folder="migrations"):
    package = site / name
    (package / folder).mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported!')\n")  # reading must never import it
    for filename, text in (files or {"001_a.sql": "CREATE TABLE {{tables.a}} (id int);\n"}).items():
        (package / folder / filename).write_text(text)
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{name}\n")
    return package
