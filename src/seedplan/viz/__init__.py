"""seedplan.viz"""
