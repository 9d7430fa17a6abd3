"""llmemory-db as a Pulumi package: ``MigratedSchema`` and ``EmbeddingProvider`` for programs in any Pulumi language.

The plugin ``plugin/pulumi-resource-llmemory-db`` runs ``python -m llmemory_db.package``: one process that serves

* the component ``llmemory-db:index:MigratedSchema`` (Construct; :mod:`.components`), whose schema Pulumi's
  ``pulumi.provider.experimental`` infers from typed arguments, with the descriptions of the engine's ``Settings``;
* the custom resources ``llmemory-db:index:Migrations`` and ``llmemory-db:index:ExtensionCheck``, the component's
  children (Check/Diff/Create/Read/Update/Delete; :mod:`.server`): run by the same ``MigrationsProvider`` and
  ``ExtensionCheckProvider`` classes as the dynamic resources of the Python-native path;
* the component ``llmemory-db:index:EmbeddingProvider`` and its child ``llmemory-db:index:EmbeddingProviderTable``
  (``llmemory_db.embedding_provider.EmbeddingProviderAdapter``).

Nothing here is imported by ``llmemory_db`` itself: the Python-native path stays as it is.
"""
PACKAGE = "llmemory-db"
VERSION = "0.2.0"   # the distribution's version (pyproject.toml; a test keeps them equal)
