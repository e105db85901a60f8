"""seedplan.planning"""
