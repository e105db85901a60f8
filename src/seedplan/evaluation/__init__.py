"""seedplan.evaluation"""
