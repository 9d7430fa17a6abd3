"""Entry point of the llmemory-db Pulumi package (prototype): components and custom resources, one process."""
from llmemory_db_package import serve

if __name__ == "__main__":
    serve()
