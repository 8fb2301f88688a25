"""Small tables of well-established facts the sample generators draw on (kept to facts that are not in dispute)."""

from __future__ import annotations

# (country, capital). Countries whose capital is contested or in transition are left out on purpose.
CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"), ("Canada", "Ottawa"),
    ("Australia", "Canberra"), ("Brazil", "Brasília"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("South Korea", "Seoul"), ("Russia", "Moscow"),
    ("the United Kingdom", "London"), ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Greece", "Athens"),
    ("Turkey", "Ankara"), ("Belgium", "Brussels"), ("Austria", "Vienna"), ("Hungary", "Budapest"),
    ("the Czech Republic", "Prague"), ("Peru", "Lima"), ("Chile", "Santiago"), ("Colombia", "Bogotá"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("the Philippines", "Manila"), ("New Zealand", "Wellington"),
    ("Morocco", "Rabat"), ("Ethiopia", "Addis Ababa"), ("Iran", "Tehran"), ("Saudi Arabia", "Riyadh"),
    ("Pakistan", "Islamabad"), ("Bangladesh", "Dhaka"), ("Ukraine", "Kyiv"), ("Romania", "Bucharest"),
    ("Cuba", "Havana"), ("Iceland", "Reykjavik"), ("Ghana", "Accra"), ("Nepal", "Kathmandu"),
]

# (name, symbol, atomic number)
ELEMENTS = [
    ("hydrogen", "H", 1), ("helium", "He", 2), ("lithium", "Li", 3), ("carbon", "C", 6), ("nitrogen", "N", 7),
    ("oxygen", "O", 8), ("fluorine", "F", 9), ("neon", "Ne", 10), ("sodium", "Na", 11), ("magnesium", "Mg", 12),
    ("aluminium", "Al", 13), ("silicon", "Si", 14), ("phosphorus", "P", 15), ("sulfur", "S", 16),
    ("chlorine", "Cl", 17), ("argon", "Ar", 18), ("potassium", "K", 19), ("calcium", "Ca", 20), ("iron", "Fe", 26),
    ("copper", "Cu", 29), ("zinc", "Zn", 30), ("silver", "Ag", 47), ("tin", "Sn", 50), ("gold", "Au", 79),
    ("mercury", "Hg", 80), ("lead", "Pb", 82),
]

# In order from the Sun.
PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]

# (unit, other unit, exact factor: 1 unit = factor other units)
CONVERSIONS = [
    ("kilometre", "metre", 1000), ("metre", "centimetre", 100), ("centimetre", "millimetre", 10),
    ("kilogram", "gram", 1000), ("litre", "millilitre", 1000), ("hour", "minute", 60), ("minute", "second", 60),
    ("day", "hour", 24), ("week", "day", 7), ("foot", "inch", 12), ("yard", "foot", 3), ("inch", "centimetre", 2.54),
    ("mile", "kilometre", 1.609344), ("pound", "kilogram", 0.45359237),
]

DEFINITIONS = {
    "photosynthesis": "the process by which plants, algae and some bacteria use light energy to turn carbon dioxide "
                      "and water into sugars, releasing oxygen",
    "a prime number": "a whole number greater than 1 whose only positive divisors are 1 and itself",
    "a mammal": "a warm-blooded vertebrate animal that has hair or fur and whose females produce milk for their young",
    "a noun": "a word that names a person, place, thing or idea",
    "a verb": "a word that describes an action, an occurrence or a state of being",
    "an atom": "the smallest unit of a chemical element that keeps the properties of that element",
    "a molecule": "a group of two or more atoms held together by chemical bonds",
    "evaporation": "the process in which a liquid turns into a gas, usually below its boiling point and at its surface",
    "an algorithm": "a finite, well-defined sequence of steps for solving a problem or carrying out a task",
    "a variable (in programming)": "a name that refers to a value stored in memory, which the program can read and "
                                   "change",
    "the perimeter": "the total length of the boundary of a two-dimensional shape",
    "a synonym": "a word that means the same or nearly the same as another word",
    "an antonym": "a word that means the opposite of another word",
    "a metaphor": "a figure of speech that describes something by saying it is something else, such as "
                  "'time is a thief'",
    "a continent": "one of the Earth's very large landmasses, such as Africa, Asia or Europe",
    "a fraction": "a number that expresses a part of a whole as one integer divided by another, such as 3/4",
    "an ecosystem": "a community of living organisms together with the non-living parts of their environment, "
                    "interacting as a system",
    "gravity": "the force by which objects with mass attract one another",
    "a herbivore": "an animal that feeds mainly on plants",
    "a carnivore": "an animal that feeds mainly on other animals",
    "condensation": "the process in which a gas cools and turns into a liquid",
    "a triangle": "a polygon with three sides and three angles",
    "an even number": "an integer that is divisible by 2 with no remainder",
    "a palindrome": "a word, phrase or number that reads the same backwards as forwards, such as 'level'",
    "a compiler": "a program that translates source code written in one language into another form, usually "
                  "machine code, before it runs",
    "an adjective": "a word that describes or modifies a noun, such as 'red' or 'tall'",
    "the equator": "the imaginary line around the middle of the Earth, halfway between the North and South Poles",
    "a hypothesis": "a proposed explanation for something that can be tested by observation or experiment",
    "density": "the mass of a substance per unit of volume",
    "a democracy": "a system of government in which citizens choose their leaders or make decisions by voting",
}

def plural(unit: str, value: float) -> str:
    if value == 1:
        return unit
    irregular = {"foot": "feet", "inch": "inches"}
    return irregular.get(unit, unit + "s")


def fmt_number(x: float) -> str:
    """Up to 8 decimals (enough for every factor above, so products are shown exactly), trailing zeros removed."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.8f}".rstrip("0").rstrip(".")
