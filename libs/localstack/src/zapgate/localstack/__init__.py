"""The local stack (`zapgate-up`) and the demo of every scenario (`zapgate-demo`)."""
