from papertape import native

native.install()  # before any module of the core is imported: compiled build or .py, module by module
