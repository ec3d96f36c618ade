print("the answer is obvious")
