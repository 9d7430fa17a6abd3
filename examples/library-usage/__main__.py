import pulumi

from analyzer import DocumentAnalyzer, DocumentAnalyzerArgs

analyzer = DocumentAnalyzer("analyzer", DocumentAnalyzerArgs(schema=pulumi.Config().get("schema") or "analyzer"))
pulumi.export("applied", analyzer.applied)
