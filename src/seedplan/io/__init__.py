"""seedplan.io"""
