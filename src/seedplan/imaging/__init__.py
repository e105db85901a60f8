"""seedplan.imaging"""
